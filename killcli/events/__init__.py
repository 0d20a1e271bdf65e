"""Real-time `killmail.saved` events: the outbox, the RabbitMQ relay, watch and webhooks.

Modules (import from them directly; this package stays light so ``--help`` stays fast):

* :mod:`killcli.events.outbox` - read events after an id, the newest id, prune;
* :mod:`killcli.events.relay` - publish unpublished outbox rows to the ``killsync.events``
  fanout exchange with publisher confirms (fleets);
* :mod:`killcli.events.watch` - follow events live from the outbox or the exchange;
* :mod:`killcli.events.render` - one-line text, Discord and Slack bodies, escaping;
* :mod:`killcli.events.hookurl` - webhook URL validation and masking;
* :mod:`killcli.events.hookpost` - one webhook POST with bounded retries and rate limits;
* :mod:`killcli.events.webhooks` - add/list/remove/test webhooks and deliver events.
"""
