"""Re-adapting the generator: with HPS (the paper's second half), or from the picks.

select.py picks, per prompt, the image HPS is confident people would pick (a positive)
and the one it is confident they would not (a negative); lora.py fine-tunes a LoRA on
the UNet with the negatives captioned "Weird image. " + prompt. dpo.py learns from the
picks themselves instead (Diffusion-DPO); tuning.py holds what the two fine-tunes share.
evaluate.py measures an adapted generator against the base (or another adapter) on
held-out prompts and seeds; pipeline.py runs select -> adapt -> judge.
"""

WEIRD = "Weird image. "  # the paper's caption prefix for negatives, and the negative prompt
