//! Identifiers shared by every layer: [`Side`], [`Dir`] and [`StreamId`] (RFC 9000 §2.1).

use std::fmt;

/// Which end of a connection an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The endpoint that initiated the connection.
    Client = 0,
    /// The endpoint that accepted it.
    Server = 1,
}

impl Side {
    /// The other side.
    pub fn peer(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }

    /// Whether this is the client.
    pub fn is_client(self) -> bool {
        self == Self::Client
    }

    /// Whether this is the server.
    pub fn is_server(self) -> bool {
        self == Self::Server
    }
}

/// Whether a stream carries data both ways or one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Bidirectional.
    Bi = 0,
    /// Unidirectional.
    Uni = 1,
}

/// A stream identifier (RFC 9000 §2.1): the low bit says who opened it, the next bit whether it
/// is unidirectional, the rest is its index among streams of that kind.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl StreamId {
    /// The `index`th stream of this kind opened by `initiator`.
    pub fn new(initiator: Side, dir: Dir, index: u64) -> Self {
        Self((index << 2) | ((dir as u64) << 1) | initiator as u64)
    }

    /// Who opened the stream.
    pub fn initiator(self) -> Side {
        if self.0 & 1 == 0 {
            Side::Client
        } else {
            Side::Server
        }
    }

    /// Whether the stream is bidirectional or unidirectional.
    pub fn dir(self) -> Dir {
        if self.0 & 2 == 0 {
            Dir::Bi
        } else {
            Dir::Uni
        }
    }

    /// Its index among streams of the same initiator and direction.
    pub fn index(self) -> u64 {
        self.0 >> 2
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let initiator = match self.initiator() {
            Side::Client => "client",
            Side::Server => "server",
        };
        let dir = match self.dir() {
            Dir::Bi => "bi",
            Dir::Uni => "uni",
        };
        write!(f, "{} {} {}", initiator, dir, self.index())
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9000 §2.1, Table 1: the two low bits of a stream ID.
    #[test]
    fn rfc9000_stream_id_types() {
        assert_eq!(StreamId::new(Side::Client, Dir::Bi, 0).0, 0x00);
        assert_eq!(StreamId::new(Side::Server, Dir::Bi, 0).0, 0x01);
        assert_eq!(StreamId::new(Side::Client, Dir::Uni, 0).0, 0x02);
        assert_eq!(StreamId::new(Side::Server, Dir::Uni, 0).0, 0x03);
        let id = StreamId::new(Side::Server, Dir::Uni, 7);
        assert_eq!(
            (id.initiator(), id.dir(), id.index()),
            (Side::Server, Dir::Uni, 7)
        );
        assert_eq!(format!("{id:?}"), "server uni 7");
    }
}
