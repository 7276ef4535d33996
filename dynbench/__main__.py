"""``python -m dynbench method=pabee task=mrpc``: see dynbench/cli.py."""
from dynbench.cli import entry

if __name__ == "__main__":
    entry()
