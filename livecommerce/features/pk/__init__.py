"""PK battles (带货PK): two hosts' rooms fight on sales or likes for a set time."""
