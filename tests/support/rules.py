"""Rule and check texts that more than one test module uses.

``FAILED_LOGIN`` is the base rule the correlation engine tests correlate (``name: failed``).
"""

CURL_RULE = """
title: Curl Piped To Shell
id: 6f1d1a4e-0000-4000-8000-000000000001
status: test
author: tests
logsource: {category: ci_job_log}
detection:
    sel: {message|contains: '| sh'}
    condition: sel
level: high
"""
"""A CI job piping a download into a shell (category ``ci_job_log``): the one-rule set of the input tests."""

REPEATED_LOGINS = """
title: Failed Login
id: 6f1d1a4e-0000-4000-8000-000000000010
name: failed_login
author: tests
logsource: {category: ci_job_log}
detection:
    sel: {message|contains: 'login failed'}
    condition: sel
level: low
---
title: Repeated Failed Logins
id: 6f1d1a4e-0000-4000-8000-000000000011
author: tests
correlation:
    type: event_count
    rules: [failed_login]
    group-by: [user]
    timespan: 1m
    condition: {gte: 3}
level: high
"""
"""A CI log's failed logins and their three-in-a-minute count per user (stateful detection tests)."""

BUILDS_SILENCE = """
id: builds-silent
title: Builds stopped
type: silence
timeout: 5m
min_events: 2
allowed_lateness: 0s
logsource: {category: ci_job_log}
"""
"""An anomaly check: CI logs (``ci_job_log``) fall silent for five minutes."""

FAILED_LOGIN = """
title: Failed login
id: 11111111-1111-4111-8111-111111111111
name: failed
logsource: {product: test}
detection: {sel: {action: fail}, condition: sel}
"""


def failed_logins_in_a_minute(*, generate: bool = False) -> str:
    """An app's failed logins (``name: failed_login``) and their three-in-a-minute count per user,
    as one multi-document rule file; ``generate`` also raises the base rule's own alerts."""
    return f"""
title: Failed login
id: 5b0f3c8e-1111-4a8e-9b61-3f1f1d0e0001
name: failed_login
status: test
logsource: {{product: app}}
detection:
  sel: {{outcome: failure}}
  condition: sel
level: low
---
title: Three failed logins of one user in a minute
id: 5b0f3c8e-1111-4a8e-9b61-3f1f1d0e0002
status: test
correlation:
  type: event_count
  rules: [failed_login]
  group-by: [user]
  timespan: 1m
  condition: {{gte: 3}}
  generate: {str(generate).lower()}
level: high
"""

PIPED_SCRIPT_RULE = """
title: Remote Script Piped Into A Shell
id: 7a5c0f3e-1111-4000-8000-000000000001
author: tests
logsource: {category: ci_job_log}
detection:
    sel: {message|contains: '| sh'}
    condition: sel
level: high
"""
"""The integration tests' CI rule (category ``ci_job_log``)."""

ROOT_LOGIN_FAILURE_RULE = """
title: Root Login Failure
id: 7a5c0f3e-1111-4000-8000-000000000002
author: tests
logsource: {product: linux, service: sshd}
detection:
    sel: {app_name: sshd, message|contains: 'Failed password for root'}
    condition: sel
level: medium
"""
"""A failed root password in sshd's syslog lines."""
