"""What more than one test module uses: fakes, builders, waits and the fixture reader.

A test module imports from here, never from another ``test_*`` module. One module per subject:

- ``waits``: ``until`` - the one poll loop (wait on a condition, never sleep and assert);
- ``routers``: ``FakeRouter`` (the alert router seen from an input) and ``RecordingRouter`` (the real one, recorded);
- ``kafka``: ``FakeConsumer``, ``FakeDeadLetters``, ``Record``, ``kafka_runner`` over them, ``FakeProducer``
  and ``ProducerFactory`` (the kafka sink's and the keyed scope's producers);
- ``alerts``: ``Clock``, ``rule``, ``alert``, ``ListSink``, ``make_client`` (the alerts API);
- ``api``: ``build_api`` (the HTTP API around a real detector), ``ADMIN``/``READER`` tokens, ``auth``;
- ``sigma``: ``rule_yaml``, ``build``, ``agree`` (index vs naive vs native screen), ``hit``;
- ``rules`` and ``fixtures``: rule, check and report texts from ``tests/fixtures/``;
- ``faults``: disk faults, spool damage and killed writers, metric ``sample``;
- ``fuzz`` and ``fuzz_targets``: hostile-input strategies and the targets of the input fuzzer;
- ``secrets``: a recognisable secret in every secret-bearing setting, ``leaks``;
- ``instances``: the service under test in this loop or as a ``pipesentry run`` child process;
- ``internal_topic``: the keyed scope's internal topic without a broker (``Topic``, ``stage1``, ``stage2``, ``mark``).
- ``keyed``: the keyed scope on a real broker, from outside (``KeyedCluster`` of child processes, group
  ``members``, committed and end offsets, ``internal_partition``, ``LiveStream``, the ``eval`` ``reference``,
  the threshold check ``FAILED_LOGINS_CHECK``).
"""
