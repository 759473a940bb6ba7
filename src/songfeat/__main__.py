"""`python -m songfeat ...`: the same CLI as the `songfeat` command (for a venv whose scripts are not on PATH)."""
from songfeat.cli import main

main()
