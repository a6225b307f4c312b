"""The base rule the correlation tests correlate: a failed login (``name: failed``)."""

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
