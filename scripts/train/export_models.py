#!/usr/bin/python3
"""Export the trained Fashion-MNIST models to TorchScript files following docs/models.md:
torch.jit.script of the EMA / final weights, saved with torch.jit.save and the metadata record
as the extra file `stsl_meta.txt`; each file is then loaded back with torch.jit.load and checked
against the eager model on a batch of 3 (max abs diff < 1e-4), on a batch of 5 (batch size is not
baked in), for the record's presence, and for the autograd path w.r.t. x that the library uses.

  /usr/bin/python3 scripts/train/export_models.py            # all four models into models/

Writes models/fmnist-ddpm.pt, fmnist-vae.pt, fmnist-ldm.pt, fmnist-classifier.pt.
Must be run with Debian's torch 1.13 so that libtorch 1.13 can load the files.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from common import (BETA_END, BETA_START, CKPT_DIR, MODELS_DIR, STEPS_NOTE,  # noqa: E402
                    TIMESTEPS, count_params, load_file, load_scripted, log, record, recorded_steps)
from nets import VAE, Classifier, LatentNet, PixelUNet  # noqa: E402
import train_ddpm  # noqa: E402
import train_latent  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from export_torchscript import device_pins  # noqa: E402



def unet_meta(name, shape, space, pairs_with=None, comment=""):
    return record.make_record("unet", name=name, prediction="eps", schedule="linear",
                              beta_start=BETA_START, beta_end=BETA_END, timesteps=TIMESTEPS,
                              sample_shape=shape, space=space, pairs_with=pairs_with,
                              comment=comment)


def vae_meta(name, latent_shape, scale, comment=""):
    return record.make_record("autoencoder", name=name, image_shape=(1, 28, 28),
                              latent_shape=latent_shape, latent_scale=scale, comment=comment)


def classifier_meta(name, comment=""):
    return record.make_record("classifier", name=name, image_shape=(1, 28, 28),
                              extra={"num_classes": "10", "feature_dim": "128"}, comment=comment)


def _load_weights(final_path, ckpt_path, default_config):
    """(config, state_dict, info) from the final file, else from the training checkpoint's EMA."""
    if os.path.isfile(final_path):
        d = load_file(final_path)
        sd = d["ema"] if "ema" in d else d["model"]
        return d.get("config", default_config), sd, d
    if ckpt_path and os.path.isfile(ckpt_path):
        d = load_file(ckpt_path)
        log("WARNING: %s missing, using EMA of the training checkpoint %s (epoch %d)"
            % (final_path, ckpt_path, d["epoch"]))
        return default_config, d["ema"], d
    raise FileNotFoundError(final_path)


def _training_steps(given, info, ckpt_path):
    """Training steps for a record's comment: as given on the command line, else as the weights file
    records them ("steps"; "step" when the weights came from a checkpoint), else the checkpoint's."""
    steps = given or recorded_steps(info)
    if not steps and ckpt_path and os.path.isfile(ckpt_path):
        steps = recorded_steps(load_file(ckpt_path))
    return steps or "?"


def save_and_check(module, path, meta, inputs, methods=("forward",)):
    """script, save with the record, reload, compare with the eager module."""
    module.eval()
    scripted = torch.jit.script(module)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    record.save_module(scripted, tmp, meta)
    os.replace(tmp, path)
    loaded, got = load_scripted(path)
    assert got == meta, "metadata record did not round-trip"
    pins = device_pins(loaded)   # a shipped model runs on any device (issue 27)
    assert not pins, "%s fixes a device: %s" % (path, "; ".join(pins))
    worst = 0.0
    for meth in methods:
        for n in (3, 5):
            args = [a[:n] if a.dim() > 0 else a for a in inputs[meth]]
            with torch.no_grad():
                ref = getattr(module, meth)(*args)
                out = getattr(loaded, meth)(*args)
            assert out.shape == ref.shape, (meth, out.shape, ref.shape)
            diff = float((out - ref).abs().max())
            worst = max(worst, diff)
            assert diff < 1e-4, "%s %s: max abs diff %g" % (path, meth, diff)
    log("%s: %d params, %.2f MB, reload ok, max abs diff %.2e" %
        (path, count_params(module), os.path.getsize(path) / 2**20, worst))
    return loaded


def check_grad(loaded, meth, args):
    x = args[0].clone().requires_grad_(True)
    out = getattr(loaded, meth)(x, *args[1:])
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ckpt-dir", default=CKPT_DIR)
    p.add_argument("--outdir", default=MODELS_DIR)
    p.add_argument("--only", default="ddpm,vae,ldm,classifier")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ddpm", default=None, help="pixel prior weights (default CKPT_DIR/ddpm-ema.pt)")
    p.add_argument("--vae", default=None, help="autoencoder weights (default CKPT_DIR/vae-final.pt)")
    p.add_argument("--ldm", default=None, help="latent prior weights (default CKPT_DIR/ldm-ema.pt); "
                   "its channels must match --vae's latent channels")
    p.add_argument("--ddpm-steps", type=int, default=None,
                   help="training steps in all, for the record's comment, when the --ddpm file does not "
                        "hold them (written before train_ddpm.py recorded 'steps')")
    p.add_argument("--ldm-steps", type=int, default=None, help="the same for --ldm")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    only = args.only.split(",")
    C = args.ckpt_dir
    x3 = torch.rand(5, 1, 28, 28) * 2 - 1
    t3 = torch.tensor([0.0, 17.0, 250.5, 999.0, 600.0])

    if "ddpm" in only:
        # an explicit weights file stands alone: the checkpoint in CKPT_DIR belongs to another run
        ck_path = None if args.ddpm else os.path.join(C, "ddpm.ckpt")
        cfg, sd, info = _load_weights(args.ddpm or os.path.join(C, "ddpm-ema.pt"), ck_path, train_ddpm.CONFIG)
        m = PixelUNet(**cfg)
        m.load_state_dict(sd)
        steps = _training_steps(args.ddpm_steps, info, ck_path)
        meta = unet_meta("fmnist-ddpm-28", (1, 28, 28), "pixel",
                         comment="libstsl Fashion-MNIST pixel DDPM, EMA 0.999 weights, "
                                 "scripts/train/train_ddpm.py " + STEPS_NOTE % steps)
        L = save_and_check(m, os.path.join(args.outdir, "fmnist-ddpm.pt"), meta, {"forward": [x3, t3]})
        check_grad(L, "forward", [x3[:2], t3[:2]])

    # the latent's shape follows the autoencoder's channels (4 for the first VAE, 8 for vae-z8)
    vae_cfg, vae_sd, vae_info = _load_weights(args.vae or os.path.join(C, "vae-final.pt"), None, None) \
        if ("vae" in only or "ldm" in only) else (None, None, None)
    latent = (int(vae_cfg.get("zc", 4)), 7, 7) if vae_cfg else None
    latent_tag = "x".join(str(s) for s in latent) if latent else ""

    if "vae" in only:
        cfg, sd, info = vae_cfg, vae_sd, vae_info
        m = VAE(**cfg)
        m.load_state_dict(sd)
        z3 = torch.randn(5, *latent)
        meta = vae_meta("fmnist-vae-" + latent_tag, latent, info["latent_scale"],
                        comment="libstsl Fashion-MNIST KL autoencoder, scripts/train/train_vae.py, "
                                "test PSNR %.2f dB" % info["test_psnr"])
        L = save_and_check(m, os.path.join(args.outdir, "fmnist-vae.pt"), meta,
                           {"forward": [x3], "encode": [x3], "decode": [z3]},
                           methods=("forward", "encode", "decode"))
        check_grad(L, "decode", [z3[:2]])

    if "ldm" in only:
        ck_path = None if args.ldm else os.path.join(C, "ldm.ckpt")
        cfg, sd, info = _load_weights(args.ldm or os.path.join(C, "ldm-ema.pt"), ck_path, train_latent.CONFIG)
        assert int(cfg["cin"]) == latent[0], "latent prior has %d channels, the VAE %d" % (cfg["cin"], latent[0])
        m = LatentNet(**cfg)
        m.load_state_dict(sd)
        steps = _training_steps(args.ldm_steps, info, ck_path)
        z3 = torch.randn(5, *latent)
        meta = unet_meta("fmnist-ldm-" + latent_tag, latent, "latent", pairs_with="fmnist-vae.pt",
                         comment="libstsl Fashion-MNIST latent DDPM on latent_scale * encode(x), EMA 0.999, "
                                 "scripts/train/train_latent.py " + STEPS_NOTE % steps)
        L = save_and_check(m, os.path.join(args.outdir, "fmnist-ldm.pt"), meta, {"forward": [z3, t3]})
        check_grad(L, "forward", [z3[:2], t3[:2]])

    if "classifier" in only:
        cfg, sd, info = _load_weights(os.path.join(C, "classifier-final.pt"), None, None)
        m = Classifier(**cfg)
        m.load_state_dict(sd)
        meta = classifier_meta("fmnist-classifier",
                               comment="libstsl Fashion-MNIST classifier, scripts/train/train_classifier.py, "
                                       "test accuracy %.4f; features(x) -> 128-dim penultimate features"
                               % info["test_acc"])
        save_and_check(m, os.path.join(args.outdir, "fmnist-classifier.pt"), meta,
                       {"forward": [x3], "features": [x3]}, methods=("forward", "features"))

    total = sum(os.path.getsize(os.path.join(args.outdir, f)) for f in os.listdir(args.outdir)
                if f.startswith("fmnist-") and f.endswith(".pt"))
    log("total size of models in %s: %.2f MB" % (args.outdir, total / 2**20))


if __name__ == "__main__":
    main()
