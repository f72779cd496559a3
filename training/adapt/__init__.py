"""Re-adapting the generator with HPS (the paper's second half).

select.py picks, per prompt, the image HPS is confident people would pick (a positive)
and the one it is confident they would not (a negative); lora.py fine-tunes a LoRA on
the UNet with the negatives captioned "Weird image. " + prompt; evaluate.py measures the
adapted generator against the base on held-out prompts and seeds.
"""

WEIRD = "Weird image. "  # the paper's caption prefix for negatives, and the negative prompt
