"""Rule and check texts that more than one test module uses, read from ``tests/fixtures/``.

One-off rules that are the subject of a single test stay inline in that test.
"""

from tests.support.fixtures import check_text, rule_text

CURL_RULE = rule_text("curl_piped_to_shell")
"""A CI job piping a download into a shell (category ``ci_job_log``): the one-rule set of the input tests."""

REPEATED_LOGINS = rule_text("repeated_failed_logins")
"""A CI log's failed logins (``name: failed_login``) and their three-in-a-minute count per user."""

FAILED_LOGIN = rule_text("failed_login")
"""The base rule the correlation engine tests correlate (``name: failed``, product ``test``)."""

BUILDS_SILENCE = check_text("builds_silent")
"""An anomaly check: CI logs (``ci_job_log``) fall silent for five minutes."""

PIPED_SCRIPT_RULE = rule_text("remote_script_piped_into_a_shell")
"""The integration tests' CI rule (category ``ci_job_log``)."""

ROOT_LOGIN_FAILURE_RULE = rule_text("root_login_failure")
"""A failed root password in sshd's syslog lines."""

BROKEN_RULE = rule_text("broken")
"""A rule with an empty detection: one load error, for reload and rule-test rejections."""


def failed_logins_in_a_minute(*, generate: bool = False) -> str:
    """An app's failed logins (``name: failed_login``) and their three-in-a-minute count per user,
    as one multi-document rule file; ``generate`` also raises the base rule's own alerts."""
    text = rule_text("failed_logins_in_a_minute")
    return text.replace("generate: false", "generate: true") if generate else text
