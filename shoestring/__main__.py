"""`python -m shoestring ...` is the same as the `shoestring` command."""
import sys

from .cli import main

sys.exit(main())
