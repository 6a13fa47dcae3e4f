"""pmta-snmp benchmarks: `python -m bench [--quick] [NAME ...]` prints one table of ratios.

Every ratio is against a reference measured in the same run (net-snmp's C subagent, grep, mawk,
json.loads, `python3 -c pass`), never a number written down elsewhere.
"""
