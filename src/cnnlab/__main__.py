"""``python -m cnnlab`` (also what ``torchrun -m cnnlab`` runs)."""
from cnnlab.apps.cli import main

if __name__ == "__main__":
    main()
