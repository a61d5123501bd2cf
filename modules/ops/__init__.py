"""Operations: what keeps the queue worked and watched without a person — the watcher (a loop around the
same orchestrator, woken by LISTEN/NOTIFY or a timer), its run-history periods, Prometheus metrics and
alerts. Above the orchestrator and below the faces: it never imports modules.cli or modules.knowledge, and
configures no logging."""
