"""``python -m training``: train, precompute latents, evaluate, bundle."""

from training.cli import main

if __name__ == "__main__":
    main()
