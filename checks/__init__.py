"""The check_pmta_* plugins for Nagios, Icinga 2 and Zabbix (installed as pmta_snmp.checks).

One module per plugin (queue, bounce, deferral, log, license, tls, complaints, blocklist,
warmup): a resource class (its probe, contexts and status line), its options, its `PLUGIN` and
`main()`. `base` holds the shared contract, `acctbase` the accounting-file window, per-key
rates and the outcomes classifier, `logscan` the log patterns, the scanner and the tailing of
the main log. Nothing here imports SNMP code; httpx
is imported only when the API is used.
"""
