//! The testbed, and the controller manager started as a child of the test.

use std::process::{Child, Command};

pub use fellowship_testbed::*;

pub struct Manager(pub Child);

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the controller manager against `env` with these flags besides the kubeconfigs.
pub fn manager(env: &Env, flags: &[&str]) -> Manager {
    Manager(
        Command::new(env!("CARGO_BIN_EXE_federation-controller-manager"))
            .arg(format!("--kubeconfig={}", env.config.display()))
            .arg("--context=federation")
            .arg(format!("--host-kubeconfig={}", env.config.display()))
            .arg("--host-context=rivendell")
            .args(flags)
            .spawn()
            .unwrap(),
    )
}
