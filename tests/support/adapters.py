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


def shifted_lora_adapter(tiny_model: Path, folder: Path, seed: int, scale: float = 0.5) -> Path:
    """A LoRA adapter that changes the images: its up-projections are random (seeded),
    not zero as a fresh adapter's are. Which way it moves a rule on the images (how red
    they are, say) is for the test to measure, not to assume."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=targets))
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in pipe.unet.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=noise) * scale)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers)
    write_info(folder, {"negative_prompt": ""})
    return folder
