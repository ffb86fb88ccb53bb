//! Graceful shutdown: SIGINT/SIGTERM become one shared signal that every task listens to
//! (the HTTP server stops accepting, workers finish and acknowledge the batch in hand).

use std::sync::Arc;

use tokio::sync::watch;

/// A cloneable handle that resolves once shutdown was requested.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The side that requests shutdown.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// A connected trigger and listener.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Ask every listener to stop.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    /// A new listener for this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// True once shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when shutdown is requested (at once if it already was).
    pub async fn requested(&mut self) {
        // An error means the trigger was dropped: treat that as a request too.
        let _ = self.rx.wait_for(|stop| *stop).await;
    }
}

/// A trigger that the first SIGINT (Ctrl-C) or SIGTERM from now on fires, and its listener.
///
/// The signal handlers are registered before this returns, so a signal while `serve` or
/// `worker` is still starting (waiting for a broker, say) is a request to stop like any other,
/// not the default action that kills the process. The trigger can also be fired by hand (when
/// every worker gave up).
///
/// Must be called inside a Tokio runtime.
pub fn on_os_signal() -> (Arc<ShutdownTrigger>, Shutdown) {
    let (trigger, shutdown) = channel();
    let trigger = Arc::new(trigger);
    let fire = Arc::clone(&trigger);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                fire.trigger();
            });
            return (trigger, shutdown);
        }
    }
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        fire.trigger();
    });
    (trigger, shutdown)
}
