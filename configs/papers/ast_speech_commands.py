r"""AST: Audio Spectrogram Transformer (Gong et al. 2021) on Speech Commands.

Reproduces (`:full`, TFDS `speech_commands`, 16 kHz clips of up to 1 s): the AST recipe
of the authors' Speech Commands script: 128 mel bins x 128 frames (25 ms windows every
10 ms; 1 s clips zero-padded to 20,720 samples = 1.295 s, as AST pads to 128 frames),
16x16 patches with stride 10 in both axes (overlapping: 12 x 12 = 144 patches), a
ViT-B-shaped encoder (12 layers, width 768, 12 heads, MLP 3072; 85,373,198 parameters
with the 12-class head), SpecAugment (one frequency mask of up to 48 bins, one time mask of
up to 48 frames) and waveform noise (the log-mel front-end and augmentation run on the
devices); Adam with betas (0.95, 0.999), lr 2.5e-4, batch 128,
30 epochs (668 steps each), the lr multiplied by 0.85 after every epoch from epoch 5
(piecewise boundaries at epochs 5..29), no warmup. Published: 98.1% accuracy on Speech
Commands V2-35 (ImageNet-pretrained AST). Expected time: about 75 GFLOPs per training
example, 2.6e6 examples: minutes of H100 compute, so the input pipeline sets the pace;
well under an hour on one H100 (an estimate, not measured here).

Deviations: TFDS `speech_commands` is the 12-class task (10 words + silence + unknown,
V2 audio), not the paper's 35 classes, so 98.1% is not the same benchmark (12-class
results in the literature are ~98% too, with different splits). AST starts from an
ImageNet-pretrained DeiT (cls + distillation tokens, averaged); no weights can be
downloaded here, so this trains from scratch and pools by averaging the patch tokens,
which costs accuracy (AST reports large drops without ImageNet pretraining). mmjax has no
mixup (AST: 0.6) and uses softmax cross-entropy (AST: BCE for Speech Commands), AdamW's
decoupled weight decay 5e-7 (AST: Adam's L2 5e-7), and a log-magnitude mel spectrogram
(tf.signal) instead of Kaldi log-power fbanks; spec_mean -3.5 and spec_std 5.5 are rough
(AST's fbank statistics -6.85 and 2 x 5.57, halved in mean for log magnitude): measure them
on the train split before a long run.

`:tiny`: the embedded digits' DTMF tones (8 kHz, 2000 samples) as a 10-class audio task:
64 mel bins x 55 frames, 16x16 patches with stride 10 (5 x 4 = 20 overlapping patches),
a 2-layer width-64 encoder, gain/noise/SpecAugment, 300 steps of batch 64.
Expected (:tiny): docs/reproductions.md.

Commands:
  python -m mmjax.main --config=configs/papers/ast_speech_commands.py:tiny --workdir=/tmp/ast
  tfds build speech_commands && python -m mmjax.main \
      --config=configs/papers/ast_speech_commands.py --workdir=/tmp/ast_sc
"""
from mmjax.config import default_config
from configs.common import config_variant

TRAIN_CLIPS = 85_511   # TFDS speech_commands train split


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/ast_speech_commands.py")
  c = default_config()
  mel = ("log_mel(sample_rate=16000, frame_length=400, frame_step=160, fft_length=512, "
         "num_mel_bins=128)")
  # The host pads the waveforms; the front-end and its augmentation run batched on the
  # devices (mmjax/data/device_ops.py), where 128 clips' log-mels are one small program.
  host = "audio_fit(20720)|keep('audio', 'label')"
  c.data.update(dict(
      name="speech_commands", train_split="train", eval_split="test", shuffle_buffer=50_000,
      preprocess_train=host, preprocess_eval=host,
      device_preprocess_train=(f"audio_noise(max_std=0.01)|{mel}|spec_augment("
                               "freq_masks=1, freq_width=48, time_masks=1, time_width=48)|"
                               "drop('audio')"),
      device_preprocess_eval=f"{mel}|drop('audio')"))
  c.model = dict(name="multimodal", modalities=("audio",), fusion="towers", width=768,
                 depth=12, num_heads=12, mlp_dim=3072, mel_bins=128, frames=128,
                 spec_patch=(16, 16), spec_stride=(10, 10), spec_mean=-3.5, spec_std=5.5,
                 num_classes=12)
  c.objective = dict(name="supervised")
  batch, epochs = 128, 30
  steps_per_epoch = TRAIN_CLIPS // batch
  c.optim.update(dict(name="adamw", learning_rate=2.5e-4, b1=0.95, b2=0.999,
                      weight_decay=5e-7, warmup_steps=0, schedule="piecewise",
                      lr_boundaries=tuple(e / epochs for e in range(5, epochs)),
                      lr_decay=0.85))
  c.train.eval_batch_size = 500
  if variant == "tiny":
    host = "audio_fit(2000)|keep('audio', 'label')"
    c.data.update(dict(
        name="mmjax_digits", eval_split="test", shuffle_buffer=4000,
        preprocess_train=host, preprocess_eval=host,
        device_preprocess_train=("audio_gain|audio_noise(max_std=0.02)|"
                                 "log_mel(frame_step=32)|spec_augment(freq_masks=1, "
                                 "freq_width=8, time_masks=1, time_width=8)|drop('audio')"),
        device_preprocess_eval="log_mel(frame_step=32)|drop('audio')"))
    c.model.update(dict(width=64, depth=2, num_heads=4, mlp_dim=128, mel_bins=64,
                        frames=55, spec_mean=-1.5, spec_std=1.5, num_classes=10))
    c.optim.update(dict(learning_rate=2e-3, warmup_steps=20, weight_decay=0.05,
                        schedule="cosine", b1=0.9))
    c.train.eval_batch_size = 250
    batch, epochs, steps_per_epoch = 64, 10, 30
  c.train.update(dict(total_steps=steps_per_epoch * epochs, batch_size=batch,
                      log_every=steps_per_epoch, eval_every=steps_per_epoch * epochs // 2,
                      checkpoint_every=steps_per_epoch * 5))
  return c
