"""Domain events: CloudEvents written in the transaction of the change they describe."""
