"""`python -m apikit.report`: write the report (see `apikit.report.main`)."""
from . import main

main()
