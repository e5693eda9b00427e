"""Runs N processes of `python -m mmjax.main` on this machine (CPU) as one multi-process job.

  python launch/local.py --num_processes=2 --devices_per_process=2 -- \
      --config=configs/quickstart.py --workdir=/tmp/x

Each process gets JAX_PLATFORMS=cpu, MMJAX_COORDINATOR_ADDRESS=localhost:<free port>,
MMJAX_NUM_PROCESSES, MMJAX_PROCESS_ID, MMJAX_CPU_COLLECTIVES=1 (gloo) and
MMJAX_CPU_DEVICES_PER_PROCESS (mmjax.main sets jax_num_cpu_devices from it). Output lines are
prefixed with [i]. If a process fails the others are stopped, and the launcher exits with the
first non-zero exit code.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def stream(i: int, proc: subprocess.Popen, lock: threading.Lock) -> None:
  for line in proc.stdout:
    with lock:
      sys.stdout.write(f"[{i}] {line}")
      sys.stdout.flush()


def exit_code(returncode: int) -> int:
  # Killed by a signal: report it as a shell would (128 + signal number).
  return returncode if returncode >= 0 else 128 - returncode


def main() -> int:
  argv = sys.argv[1:]
  split = argv.index("--") if "--" in argv else len(argv)
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   usage="%(prog)s [options] -- [mmjax.main flags]")
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=1,
                      help="CPU devices each process simulates (jax_num_cpu_devices).")
  parser.add_argument("--module", default="mmjax.main", help="Python module each process runs.")
  parser.add_argument("--port", type=int, default=0, help="Coordinator port (0: a free one).")
  args = parser.parse_args(argv[:split])
  if args.num_processes < 1 or args.devices_per_process < 1:
    parser.error("--num_processes and --devices_per_process must be at least 1.")
  port = args.port or free_port()
  procs, threads, lock = [], [], threading.Lock()
  for i in range(args.num_processes):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               MMJAX_COORDINATOR_ADDRESS=f"localhost:{port}",
               MMJAX_NUM_PROCESSES=str(args.num_processes), MMJAX_PROCESS_ID=str(i),
               MMJAX_CPU_COLLECTIVES="1",
               MMJAX_CPU_DEVICES_PER_PROCESS=str(args.devices_per_process))
    proc = subprocess.Popen([sys.executable, "-m", args.module, *argv[split + 1:]], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    threads.append(threading.Thread(target=stream, args=(i, proc, lock), daemon=True))
    threads[-1].start()
    procs.append(proc)
  first_failure = 0
  try:
    while True:
      codes = [p.poll() for p in procs]  # Every process: any() would stop at a running one.
      failed = [(i, c) for i, c in enumerate(codes) if c]
      if failed:
        first_failure = exit_code(failed[0][1])
        print(f"[launcher] process {failed[0][0]} exited with code {failed[0][1]}; stopping "
              "the others.", file=sys.stderr, flush=True)
        break
      if None not in codes:
        break
      time.sleep(0.1)
  except KeyboardInterrupt:
    first_failure = 128 + signal.SIGINT
  # Whoever is still running would wait for the failed process forever (until the init or
  # collective timeout): stop them.
  for p in procs:
    if p.poll() is None:
      p.terminate()
  for p in procs:
    try:
      p.wait(timeout=10)
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()
  for t in threads:  # The last lines of output.
    t.join(timeout=5)
  return first_failure


if __name__ == "__main__":
  sys.exit(main())
