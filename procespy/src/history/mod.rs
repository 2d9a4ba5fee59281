//! What procespy remembers: the covered processes' RSS over the last
//! minutes in memory ([`recent`]).

pub(crate) mod recent;
