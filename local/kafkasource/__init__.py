"""A local dispatcher that behaves as Knative Eventing's KafkaSource."""
