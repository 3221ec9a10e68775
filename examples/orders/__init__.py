"""Orders: an HTTP intake that validates orders and publishes them to Kafka, an event function that
totals them per customer, and a read endpoint. Built on ``functions.app`` only."""
