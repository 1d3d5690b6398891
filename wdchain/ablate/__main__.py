"""``python -m wdchain.ablate``."""

from wdchain.ablate import main

if __name__ == "__main__":
    main()
