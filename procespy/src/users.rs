//! User names from uids, looked up once each.

use std::{cell::RefCell, collections::HashMap};

/// A cache of uid → user name lookups.
#[derive(Debug, Default)]
pub(crate) struct UserNames {
    known: RefCell<HashMap<u32, String>>,
}

impl UserNames {
    /// The user's name, or the uid as text when it has none; `?` when unknown.
    pub(crate) fn name(&self, uid: Option<u32>) -> String {
        let Some(uid) = uid else {
            return "?".to_owned();
        };
        self.known
            .borrow_mut()
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map_or_else(|| uid.to_string(), |user| user.name)
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_name_and_strangers_a_number() {
        let users = UserNames::default();
        assert_eq!(users.name(Some(0)), "root");
        assert_eq!(users.name(Some(3_999_999)), "3999999");
        assert_eq!(users.name(None), "?");
    }
}
