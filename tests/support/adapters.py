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


def distinct_lora_adapter(tiny_model: Path, folder: Path, seed: int, scale: float = 2.0) -> Path:
    """A LoRA adapter that changes the images, unlike :func:`lora_adapter` (whose up
    weights start at zero): its up weights are random, drawn from ``seed``."""
    import torch
    from safetensors.torch import load_file, save_file

    lora_adapter(tiny_model, folder)
    weights = folder / "pytorch_lora_weights.safetensors"
    tensors = load_file(weights)
    draw = torch.Generator().manual_seed(seed)
    for name in sorted(tensors):  # every weight from the seed: the same adapter each time
        tensor = tensors[name]
        noise = torch.randn(tensor.shape, generator=draw, dtype=torch.float32)
        if ".lora.up." in name or ".lora_B." in name:
            tensors[name] = (noise * scale).to(tensor.dtype)
        elif ".lora.down." in name or ".lora_A." in name:  # peft draws these unseeded
            tensors[name] = (noise / tensor.shape[-1] ** 0.5).to(tensor.dtype)
    save_file(tensors, weights)
    return folder
