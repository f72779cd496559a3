"""The Human Preference Score model: load, score, refit on picks, evaluate.

HPS is a CLIP model fine-tuned so that, for each prompt, the image people picked scores
highest; its score is 100 · cos(image embedding, prompt embedding).
"""

from training.hps.model import ClipModel, HPSLoadError, load_clip, save_checkpoint
from training.hps.scorer import HPSScorer

__all__ = ["ClipModel", "HPSLoadError", "HPSScorer", "load_clip", "save_checkpoint"]
