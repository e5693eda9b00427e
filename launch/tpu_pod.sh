#!/usr/bin/env bash
# Runs mmjax on every worker of a Cloud TPU VM pod (or a single TPU VM) through gcloud.
#
#   launch/tpu_pod.sh setup TPU_NAME ZONE [PROJECT]
#   launch/tpu_pod.sh run   TPU_NAME ZONE [PROJECT] -- --config=configs/quickstart.py \
#       --workdir=/mnt/shared/run
#
# setup: copies this working tree (tracked and untracked, not ignored, files) to ~/mmjax on
#   every worker, or clones REPO_URL there if it is set, then installs mmjax[data] and
#   jax[tpu]. Run it again after changing the code.
# run: starts `python3 -m mmjax.main ARGS` on all workers at once. JAX reads the pod's
#   topology itself, so there are no distributed flags; TPU_NAME is exported so that mmjax
#   knows to call jax.distributed.initialize().
# Environment: REPO_URL (optional, git URL to clone instead of copying), REPO_REF (branch or
#   tag, default: the default branch), REMOTE_DIR (default: mmjax, under the workers' $HOME).
set -euo pipefail

usage() {
  echo "usage: $0 setup|run TPU_NAME ZONE [PROJECT] [-- mmjax.main flags]" >&2
  exit 2
}

[[ $# -ge 3 ]] || usage
step=$1 tpu=$2 zone=$3
shift 3
gcloud_flags=(--zone="$zone")
if [[ $# -gt 0 && $1 != "--" ]]; then
  gcloud_flags+=(--project="$1")
  shift
fi
if [[ $# -gt 0 ]]; then
  [[ $1 == "--" ]] || usage
  shift
fi
remote_dir=$(printf '%q' "${REMOTE_DIR:-mmjax}")

on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$tpu" "${gcloud_flags[@]}" --worker=all --command="$1"
}

case "$step" in
  setup)
    [[ $# -eq 0 ]] || usage
    if [[ -n ${REPO_URL:-} ]]; then
      branch=${REPO_REF:+--branch $(printf '%q' "$REPO_REF")}
      on_all_workers "rm -rf ~/$remote_dir && git clone $branch $(printf '%q' "$REPO_URL") \
~/$remote_dir"
    else
      # Only what git would commit: no virtual environments, workdirs or caches.
      root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
      tarball=$(mktemp --suffix=.tar.gz)
      trap 'rm -f "$tarball"' EXIT
      (cd "$root" && git ls-files -z --cached --others --exclude-standard \
        | tar -czf "$tarball" --ignore-failed-read --null -T -)
      gcloud compute tpus tpu-vm scp "$tarball" "$tpu:mmjax_src.tar.gz" "${gcloud_flags[@]}" \
        --worker=all
      on_all_workers "rm -rf ~/$remote_dir && mkdir -p ~/$remote_dir && \
tar -xzf ~/mmjax_src.tar.gz -C ~/$remote_dir && rm ~/mmjax_src.tar.gz"
    fi
    on_all_workers "cd ~/$remote_dir && python3 -m pip install -U pip && \
python3 -m pip install -e '.[data]' 'jax[tpu]'"
    ;;
  run)
    printf -v args '%q ' "$@"
    on_all_workers "cd ~/$remote_dir && TPU_NAME=$(printf '%q' "$tpu") python3 -m mmjax.main $args"
    ;;
  *)
    usage
    ;;
esac
