"""`python -m flaresynth` runs the CLI, so `accelerate launch -m flaresynth train ...` works."""

from flaresynth.cli import main

if __name__ == "__main__":
    main()
