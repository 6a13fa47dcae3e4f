"""Deliverability outcomes: who a record went to (provider) and why it failed (reason class).

`providers` maps a record to a mailbox provider by recipient domain and remote MX host;
`reasons` classifies a failure reply into a bounded set of reason classes (with the blocklist's
name) and normalises reply texts for grouping. Both read shipped, editable TOML files
(`providers.toml`, `reasons.toml` next to this module; copies for editing in
`contrib/outcomes/`). Knows nothing of SNMP; the modules are imported on their own so that the
plugins, which need only `normalize_reason`, do not load the rule files.
"""


class OutcomesFileError(ValueError):
    """A provider map or reason rules file that cannot be used; the message names the file
    and, where known, the line and key."""
