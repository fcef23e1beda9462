//! The ttrpc Task service containerd calls, adapted to `Service`.

use std::sync::Arc;

use containerd_shim::api::{self, Status};
use containerd_shim::protos::events::task::{
    TaskExecAdded, TaskExecStarted, TaskPaused, TaskResumed,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::oci::ProcessDetails;
use containerd_shim::protos::topics::*;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};

use crate::events;
use crate::service::{Phase, Service};
use crate::stdio::StdioPaths;

#[derive(Clone)]
pub struct TaskService(pub Arc<Service>);

impl Task for TaskService {
    fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        Ok(self.0.with_container(&req.id, |c| {
            let p = c.process(&req.exec_id)?;
            let status = match (p.exit, p.phase) {
                (Some(_), _) => Status::STOPPED,
                (None, Phase::Created) => Status::CREATED,
                (None, Phase::Running) => Status::RUNNING,
                (None, Phase::Paused) => Status::PAUSED,
            };
            let mut resp = api::StateResponse {
                id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                bundle: c.bundle.display().to_string(),
                pid: p.pid as u32,
                status: status.into(),
                stdin: p.stdio.stdin.clone(),
                stdout: p.stdio.stdout.clone(),
                stderr: p.stdio.stderr.clone(),
                terminal: p.stdio.terminal,
                ..Default::default()
            };
            if let Some(e) = p.exit {
                resp.exit_status = e.status;
                resp.exited_at = Some(events::timestamp(e.at)).into();
            }
            Ok(resp)
        })?)
    }

    fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        log::info!("create {} (checkpoint {:?})", req.id, req.checkpoint);
        let pid = self.0.create(
            &req.id,
            req.bundle.as_ref(),
            &req.rootfs,
            stdio.clone(),
            &req.checkpoint,
        )?;
        self.0.publish(
            TASK_CREATE_EVENT_TOPIC,
            Box::new(events::create(
                &req.id,
                &req.bundle,
                &req.rootfs,
                &stdio,
                &req.checkpoint,
                pid,
            )),
        );
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let pid = self.0.start(&req.id, &req.exec_id)?;
        if req.exec_id.is_empty() {
            self.0.publish(
                TASK_START_EVENT_TOPIC,
                Box::new(events::start(&req.id, pid)),
            );
        } else {
            let ev = TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: pid as u32,
                ..Default::default()
            };
            self.0.publish(TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(ev));
        }
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let (pid, exit) = self.0.delete(&req.id, &req.exec_id)?;
        if req.exec_id.is_empty() {
            self.0.publish(
                TASK_DELETE_EVENT_TOPIC,
                Box::new(events::delete(&req.id, pid, &exit)),
            );
        }
        Ok(api::DeleteResponse {
            pid: pid as u32,
            exit_status: exit.status,
            exited_at: Some(events::timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let mut resp = api::PidsResponse::default();
        for (pid, exec_id) in self.0.pids(&req.id)? {
            let mut info = ProcessInfo {
                pid: pid as u32,
                ..Default::default()
            };
            if let Some(exec_id) = exec_id {
                let details = ProcessDetails {
                    exec_id,
                    ..Default::default()
                };
                if let Ok(value) = details.write_to_bytes() {
                    info.info = Some(Any {
                        type_url: "containerd.runc.v1.ProcessDetails".into(),
                        value,
                        ..Default::default()
                    })
                    .into();
                }
            }
            resp.processes.push(info);
        }
        Ok(resp)
    }

    fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.0.pause(&req.id, true)?;
        let ev = TaskPaused {
            container_id: req.id.clone(),
            ..Default::default()
        };
        self.0.publish(TASK_PAUSED_EVENT_TOPIC, Box::new(ev));
        Ok(api::Empty::default())
    }

    fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        self.0.pause(&req.id, false)?;
        let ev = TaskResumed {
            container_id: req.id.clone(),
            ..Default::default()
        };
        self.0.publish(TASK_RESUMED_EVENT_TOPIC, Box::new(ev));
        Ok(api::Empty::default())
    }

    fn checkpoint(
        &self,
        _: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        log::info!("checkpoint {} to {:?}", req.id, req.path);
        let image = self
            .0
            .checkpoint(&req.id, &req.path, req.options.as_ref())?;
        let ev = events::checkpointed(&req.id, &image.display().to_string());
        self.0.publish(TASK_CHECKPOINTED_EVENT_TOPIC, Box::new(ev));
        Ok(api::Empty::default())
    }

    fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.0.kill(&req.id, &req.exec_id, req.signal, req.all)?;
        Ok(api::Empty::default())
    }

    fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        self.0.add_exec(&req.id, &req.exec_id, stdio, spec)?;
        let ev = TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        self.0.publish(TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(ev));
        Ok(api::Empty::default())
    }

    fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        self.0
            .resize(&req.id, &req.exec_id, req.width, req.height)?;
        Ok(api::Empty::default())
    }

    fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        if req.stdin {
            self.0.close_stdin(&req.id, &req.exec_id)?;
        }
        Ok(api::Empty::default())
    }

    fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        self.0.update(&req.id, &resources)?;
        Ok(api::Empty::default())
    }

    fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let exit = self.0.wait(&req.id, &req.exec_id)?;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: Some(events::timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        let json = self.0.stats(&req.id)?;
        let any = crate::stats::to_any(&crate::stats::metrics(&json))?;
        Ok(api::StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self
            .0
            .with_container(&req.id, |c| Ok(c.init.pid))
            .unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    /// Exits once no container is left (or at once with `now`), as the
    /// runc shim does.
    fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if req.now || self.0.is_empty() {
            self.0.shutdown.signal();
        }
        Ok(api::Empty::default())
    }
}
