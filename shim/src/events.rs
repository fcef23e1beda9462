//! The task events containerd expects from a shim, built from the shim's
//! records. Published with the topics in `containerd_shim::protos::topics`.

use containerd_shim::protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::types::mount::Mount;

use crate::reaper::Exit;
use crate::stdio::StdioPaths;

pub fn timestamp(at: std::time::SystemTime) -> Timestamp {
    Timestamp::from(at)
}

pub fn exit(container_id: &str, id: &str, exit: &Exit) -> TaskExit {
    TaskExit {
        container_id: container_id.to_string(),
        id: id.to_string(),
        pid: exit.pid as u32,
        exit_status: exit.status,
        exited_at: Some(timestamp(exit.at)).into(),
        ..Default::default()
    }
}

pub fn create(
    id: &str,
    bundle: &str,
    rootfs: &[Mount],
    stdio: &StdioPaths,
    checkpoint: &str,
    pid: i32,
) -> TaskCreate {
    TaskCreate {
        container_id: id.to_string(),
        bundle: bundle.to_string(),
        rootfs: rootfs.to_vec(),
        io: Some(TaskIO {
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            terminal: stdio.terminal,
            ..Default::default()
        })
        .into(),
        checkpoint: checkpoint.to_string(),
        pid: pid as u32,
        ..Default::default()
    }
}

pub fn start(id: &str, pid: i32) -> TaskStart {
    TaskStart {
        container_id: id.to_string(),
        pid: pid as u32,
        ..Default::default()
    }
}

pub fn delete(id: &str, pid: i32, exit: &Exit) -> TaskDelete {
    TaskDelete {
        container_id: id.to_string(),
        id: id.to_string(),
        pid: pid as u32,
        exit_status: exit.status,
        exited_at: Some(timestamp(exit.at)).into(),
        ..Default::default()
    }
}

pub fn oom(id: &str) -> TaskOOM {
    TaskOOM {
        container_id: id.to_string(),
        ..Default::default()
    }
}

pub fn checkpointed(id: &str, image: &str) -> TaskCheckpointed {
    TaskCheckpointed {
        container_id: id.to_string(),
        checkpoint: image.to_string(),
        ..Default::default()
    }
}
