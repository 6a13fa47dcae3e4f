"""pmta-snmp: PowerMTA monitoring over SNMP (AgentX) and check_pmta_* plugins."""

__version__ = "0.1.0"
