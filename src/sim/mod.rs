//! The simulated cloud: an OSS server faithful enough that a client bug real OSS would reject fails here too.
