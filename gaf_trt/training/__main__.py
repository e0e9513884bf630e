"""``python -m gaf_trt.training``: train, precompute latents, evaluate, bundle."""

from gaf_trt.training.cli import main

if __name__ == "__main__":
    main()
