"""`python -m pmta_snmp` runs the `pmta-snmp` command."""

import sys

from pmta_snmp.cli import main

sys.exit(main())
