"""The check_pmta_* plugins for Nagios, Icinga 2 and Zabbix (installed as pmta_snmp.checks).

One module per plugin (queue, bounce, deferral, log, license, tls), each with `main()`;
`base` holds the shared contract, `acctbase` the accounting-file window, `logscan` the log
patterns and scanner. Nothing here imports SNMP code; httpx is imported only when the API is used.
"""
