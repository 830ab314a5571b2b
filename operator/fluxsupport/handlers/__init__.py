"""kopf handlers: read the object, call the domain, return the status patch."""
