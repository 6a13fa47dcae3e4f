"""`python -m pmta_snmp.sim` with TCP_NODELAY on its HTTP server (see `common.no_nagle`).

    python -m bench.sim_child [pmta-sim options]
"""

from __future__ import annotations

import sys

from bench.common import no_nagle

if __name__ == "__main__":
    from pmta_snmp.sim.__main__ import main

    with no_nagle():
        sys.exit(main(sys.argv[1:]))
