//! The in-flight registry: the tasks this worker holds, keyed by (event,
//! lease token), never by event alone. After a requeue the same event can be
//! claimed again while its first attempt is still finishing; each attempt
//! removes only its own entry.

use std::collections::HashMap;
use std::sync::Mutex;

/// One held task: its event and the lease token of the attempt holding it.
pub(crate) type Key = (i64, i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Claimed, waiting in the buffer for a free handler.
    Claimed,
    /// Its handler has started.
    Started,
}

#[derive(Default)]
pub(crate) struct Registry {
    held: Mutex<HashMap<Key, Hold>>,
}

impl Registry {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Hold>> {
        self.held.lock().expect("in-flight registry poisoned")
    }

    /// Claimed tasks are held from the moment the fetch returns them.
    pub(crate) fn hold(&self, keys: impl IntoIterator<Item = Key>) {
        let mut held = self.held();
        for key in keys {
            held.insert(key, Hold::Claimed);
        }
    }

    /// A handler started on the task.
    pub(crate) fn start(&self, key: Key) {
        if let Some(hold) = self.held().get_mut(&key) {
            *hold = Hold::Started;
        }
    }

    /// The attempt is over (settled, failed, handed back or given up):
    /// removes this attempt's entry and no other.
    pub(crate) fn forget(&self, key: Key) {
        self.held().remove(&key);
    }

    pub(crate) fn forget_all(&self, keys: &[Key]) {
        let mut held = self.held();
        for key in keys {
            held.remove(key);
        }
    }

    /// Whether the attempt's handler started (a released task that never
    /// started gets its attempt back).
    pub(crate) fn started(&self, key: Key) -> bool {
        self.held().get(&key) == Some(&Hold::Started)
    }

    /// The lease tokens held: what the heartbeat reports.
    pub(crate) fn tokens(&self) -> Vec<i64> {
        self.held().keys().map(|&(_, token)| token).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_attempt_forgets_only_itself() {
        let registry = Registry::default();
        registry.hold([(7, 1)]);
        registry.start((7, 1));
        // Requeued and claimed again while the first attempt finishes.
        registry.hold([(7, 2)]);
        registry.forget((7, 1));
        assert_eq!(registry.tokens(), vec![2]);
        assert!(!registry.started((7, 2)));
        registry.start((7, 2));
        assert!(registry.started((7, 2)));
    }
}
