"""A small LoRA adapter made on the spot, for tests that register and serve one."""

from __future__ import annotations

from pathlib import Path

from training.run_folder import write_info


def lora_adapter(tiny_model: Path, folder: Path) -> Path:
    """A small LoRA adapter in diffusers' format, with prefloop's negative prompt."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers)
    write_info(folder, {"negative_prompt": "Weird image."})
    return folder
