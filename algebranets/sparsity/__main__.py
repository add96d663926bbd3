"""`python -m algebranets.sparsity export ...`: see `algebranets.sparse_export`.

The command restores a training run, so its code sits above the trainer, in
`algebranets.sparse_export`; this file only starts it.
"""

import sys

from algebranets import sparse_export
from algebranets import errors

if __name__ == "__main__":
  sys.exit(errors.run_cli(sparse_export.main, sys.argv[1:]))
