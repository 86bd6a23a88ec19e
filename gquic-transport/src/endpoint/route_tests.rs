//! The remembered last route never outlives the route it copies.

use super::*;

fn endpoint() -> Endpoint {
    let provider = Arc::new(crate::crypto::default_provider());
    Endpoint::new(EndpointConfig::new(provider, [3; 32]), None, [5; 32]).unwrap()
}

/// A route looked up, then removed, replaced or dropped with its connection, is looked up
/// afresh: a datagram for a retired connection ID must not reach the connection that had it.
#[test]
fn the_last_route_follows_every_change_of_the_routes() {
    let mut ep = endpoint();
    let x = ConnectionId::new(&[1; 8]);
    let y = ConnectionId::new(&[2; 8]);
    ep.route(x, 1);
    ep.route(y, 1);
    assert_eq!(ep.routed(&x), Some(1));
    assert_eq!(ep.routed(&x), Some(1), "from the last route");
    ep.unroute(&x, 1);
    assert_eq!(ep.routed(&x), None, "retired");
    ep.route(x, 2);
    assert_eq!(ep.routed(&x), Some(2), "routed again, elsewhere");
    assert_eq!(ep.routed(&y), Some(1));
    ep.route(y, 3);
    assert_eq!(ep.routed(&y), Some(3), "replaced");
    ep.unroute(&x, 7);
    assert_eq!(
        ep.routed(&x),
        Some(2),
        "only its own connection's removal counts"
    );
    ep.forget(2);
    assert_eq!(ep.routed(&x), None, "its connection forgotten");
    assert_eq!(ep.routed(&y), Some(3));
}
