"""Log shippers: follow an Exim main log through rotation and publish its raw lines to Kafka."""
