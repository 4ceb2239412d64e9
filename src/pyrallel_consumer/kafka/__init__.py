"""The Kafka adapter: the only core package that imports confluent_kafka's clients.

It holds the librdkafka settings the library uses (``settings``), the construction of every client
(``clients.KafkaClients``: the consumer, the dead-letter producer, the admin client of the topic check), the
topic check at start (``topic_check``), the dead-letter publisher (``dead_letter``) and the BrokerPoller, the
one owner of the confluent Consumer, with the parts of its thread (``assignment_table``, ``fetch_gate``,
``commits``, ``inbox``, ``events``). The control plane (``control/``) talks to Kafka only through these.
"""
