"""create_model with guided-diffusion's keyword arguments, and the model_path of DPS's fork, whose
create_model tries to load it and prints to stdout when that fails (it does for the default '')."""
import torch

from .unet import UNetModel

NUM_CLASSES = 10


def create_model(image_size, num_channels, num_res_blocks, channel_mult="", learn_sigma=False,
                 class_cond=False, use_checkpoint=False, attention_resolutions="16", num_heads=1,
                 num_head_channels=-1, num_heads_upsample=-1, use_scale_shift_norm=False,
                 dropout=0, resblock_updown=False, use_fp16=False, use_new_attention_order=False,
                 model_path=""):
    mult = tuple(int(m) for m in channel_mult.split(",")) if channel_mult else (1, 2)
    ds = tuple(image_size // int(r) for r in str(attention_resolutions).split(","))
    model = UNetModel(image_size=image_size, in_channels=3, model_channels=num_channels,
                      out_channels=6 if learn_sigma else 3, num_res_blocks=num_res_blocks,
                      attention_resolutions=ds, channel_mult=mult,
                      num_classes=NUM_CLASSES if class_cond else None, use_fp16=use_fp16,
                      num_heads=num_heads, use_scale_shift_norm=use_scale_shift_norm)
    try:
        model.load_state_dict(torch.load(model_path, map_location="cpu"))
    except Exception as e:
        print(f"Got exception: {e} / Randomly initialize")
    return model
