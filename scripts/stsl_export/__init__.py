"""Front-ends of scripts/export_torchscript.py for the checkpoints people have (guided-diffusion /
ADM, Stable Diffusion through diffusers) and a small .safetensors reader.  See docs/real-models.md."""
