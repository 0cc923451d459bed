"""The container's process under tini: it readies /workspace, says what it found, runs `bespoke run`
(forwarding signals to it) and then follows BESPOKE_ON_FINISH. Any other command is run as given."""
