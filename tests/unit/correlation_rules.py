"""The base rule the correlation tests correlate: a failed login (``name: failed``)."""

FAILED_LOGIN = """
title: Failed login
id: 11111111-1111-4111-8111-111111111111
name: failed
logsource: {product: test}
detection: {sel: {action: fail}, condition: sel}
"""
