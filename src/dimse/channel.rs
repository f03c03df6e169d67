//! Message-level I/O over an established association (PS3.8 9.3.5, Annex E): reassembles P-DATA
//! fragments into DIMSE messages and fragments outgoing messages to the peer's maximum PDU length.
//! The same code serves associations we accept (SCP) and those we open for C-MOVE (SCU).

use std::collections::VecDeque;
use std::future::Future;

use bytes::{Bytes, BytesMut};
use dicom_ul::association::{Association, AsyncAssociation, AsyncClientAssociation};
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::Pdu;
use tokio::net::TcpStream;

use super::association::{AcceptedAssociation, PduStream, WireError};
use super::message::{command_field, Command, CommandError};
use crate::dicom::part10::StoredFileHeader;
use crate::store::staging::{Received, Staging, StagingError};

/// The largest data set of a message other than C-STORE (a query or retrieve identifier) held in
/// memory; a larger one is a protocol violation.
const MAX_IDENTIFIER_BYTES: usize = 4 * 1024 * 1024;

/// Errors on an association.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Our own PDU stream failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// dicom-ul's association failed (outgoing associations).
    #[error("association: {0}")]
    Ul(#[from] dicom_ul::association::Error),
    /// A command set did not decode.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A data set could not be staged.
    #[error(transparent)]
    Staging(#[from] StagingError),
}

/// Something that carries whole PDUs of an established association.
pub trait PduTransport: Send {
    /// Sends one PDU.
    fn send_pdu(&mut self, pdu: &Pdu) -> impl Future<Output = Result<(), ChannelError>> + Send;
    /// Receives one PDU.
    fn receive_pdu(&mut self) -> impl Future<Output = Result<Pdu, ChannelError>> + Send;
    /// The peer's maximum PDU length (0 = unlimited).
    fn peer_max_pdu_length(&self) -> u32;
}

/// The transport of an association we accepted.
pub struct AcceptorTransport {
    stream: PduStream,
    peer_max_pdu_length: u32,
}

impl AcceptorTransport {
    /// Aborts the association.
    pub async fn abort(self) {
        self.stream.abort().await
    }
}

impl PduTransport for AcceptorTransport {
    async fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), ChannelError> {
        Ok(self.stream.write(pdu).await?)
    }
    async fn receive_pdu(&mut self) -> Result<Pdu, ChannelError> {
        Ok(self.stream.read().await?)
    }
    fn peer_max_pdu_length(&self) -> u32 {
        self.peer_max_pdu_length
    }
}

impl PduTransport for AsyncClientAssociation<TcpStream> {
    async fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), ChannelError> {
        Ok(AsyncAssociation::send(self, pdu).await?)
    }
    async fn receive_pdu(&mut self) -> Result<Pdu, ChannelError> {
        Ok(AsyncAssociation::receive(self).await?)
    }
    fn peer_max_pdu_length(&self) -> u32 {
        Association::peer_max_pdu_length(self)
    }
}

/// One DIMSE message: its command and, when present, its data set bytes.
#[derive(Debug)]
pub struct Message {
    /// The presentation context it arrived on.
    pub presentation_context_id: u8,
    /// The command set.
    pub command: Command,
    /// The data set bytes, encoded in the presentation context's transfer syntax (identifiers;
    /// a C-STORE data set too when the channel does not stage).
    pub dataset: Option<Bytes>,
    /// A C-STORE data set received through the staging area: in memory, in a staging file, or
    /// discarded as too large.
    pub received: Option<Received>,
}

/// What arrived next on an association.
#[derive(Debug)]
pub enum Incoming {
    /// A complete message.
    Message(Message),
    /// The peer released the association (we answered A-RELEASE-RP).
    Released,
    /// The peer aborted the association.
    Aborted,
}

/// An accepted presentation context.
#[derive(Debug, Clone)]
pub struct AcceptedContext {
    /// Presentation context ID.
    pub id: u8,
    /// Abstract syntax (SOP class) UID.
    pub abstract_syntax: String,
    /// Transfer syntax UID.
    pub transfer_syntax: String,
}

/// Message-level wrapper over an association.
pub struct Channel<A> {
    association: A,
    pending: VecDeque<PDataValue>,
    contexts: Vec<AcceptedContext>,
    /// Where C-STORE data sets are received, bounded in memory; without it they are held whole.
    staging: Option<Staging>,
    /// The peer's AE title, which the stored files name as their source.
    calling_ae_title: String,
}

/// A data set as it was received.
enum DataSet {
    Held(Bytes),
    Staged(Received),
}

impl Channel<AcceptorTransport> {
    /// A channel over an association we accepted.
    pub fn accepted(association: AcceptedAssociation) -> Self {
        Channel {
            association: AcceptorTransport {
                stream: association.stream,
                peer_max_pdu_length: association.peer_max_pdu_length,
            },
            pending: VecDeque::new(),
            contexts: association.contexts,
            staging: None,
            calling_ae_title: String::new(),
        }
    }

    /// Receives C-STORE data sets through `staging`: bounded in memory, large ones in staging
    /// files (and uploaded as they arrive, named as from `calling_ae_title`), over-limit ones
    /// read and discarded so the peer still gets its status.
    pub fn with_staging(mut self, staging: Staging, calling_ae_title: &str) -> Self {
        self.staging = Some(staging);
        self.calling_ae_title = calling_ae_title.to_string();
        self
    }
}

impl Channel<AsyncClientAssociation<TcpStream>> {
    /// A channel over an association we requested.
    pub fn requested(association: AsyncClientAssociation<TcpStream>) -> Self {
        let contexts = association
            .presentation_contexts()
            .iter()
            .map(|pc| AcceptedContext {
                id: pc.id,
                abstract_syntax: pc.abstract_syntax.trim_end_matches(['\0', ' ']).to_string(),
                transfer_syntax: pc.transfer_syntax.trim_end_matches(['\0', ' ']).to_string(),
            })
            .collect();
        Channel {
            association,
            pending: VecDeque::new(),
            contexts,
            staging: None,
            calling_ae_title: String::new(),
        }
    }
}

impl<A: PduTransport> Channel<A> {
    /// The accepted presentation contexts.
    pub fn contexts(&self) -> &[AcceptedContext] {
        &self.contexts
    }

    /// The accepted context with this ID.
    pub fn context(&self, id: u8) -> Option<&AcceptedContext> {
        self.contexts.iter().find(|c| c.id == id)
    }

    /// The association itself.
    pub fn association(&mut self) -> &mut A {
        &mut self.association
    }

    async fn next_pdv(&mut self) -> Result<Result<PDataValue, Incoming>, ChannelError> {
        loop {
            if let Some(pdv) = self.pending.pop_front() {
                return Ok(Ok(pdv));
            }
            match self.association.receive_pdu().await? {
                Pdu::PData { data } => self.pending.extend(data),
                Pdu::ReleaseRQ => {
                    self.association.send_pdu(&Pdu::ReleaseRP).await?;
                    return Ok(Err(Incoming::Released));
                }
                Pdu::AbortRQ { .. } => return Ok(Err(Incoming::Aborted)),
                other => {
                    return Err(ChannelError::Protocol(format!(
                        "unexpected PDU during data transfer: {}",
                        pdu_name(&other)
                    )))
                }
            }
        }
    }

    /// Receives the next message, or learns that the peer released or aborted.
    pub async fn receive(&mut self) -> Result<Incoming, ChannelError> {
        let mut command_bytes = BytesMut::new();
        let pc_id;
        loop {
            let pdv = match self.next_pdv().await? {
                Ok(pdv) => pdv,
                Err(end) => return Ok(end),
            };
            if pdv.value_type != PDataValueType::Command {
                return Err(ChannelError::Protocol(
                    "data set fragment received where a command was expected".into(),
                ));
            }
            command_bytes.extend_from_slice(&pdv.data);
            if pdv.is_last {
                pc_id = pdv.presentation_context_id;
                break;
            }
        }
        let command = Command::decode(&command_bytes)?;
        let (dataset, received) = if command.has_dataset() {
            let spool = self
                .staging
                .as_ref()
                .filter(|_| command.command_field() == Some(command_field::C_STORE_RQ))
                .map(|s| s.spool_object(None, self.stored_header(pc_id, &command)));
            match self.receive_dataset(pc_id, spool).await? {
                Ok(DataSet::Held(bytes)) => (Some(bytes), None),
                Ok(DataSet::Staged(received)) => (None, Some(received)),
                Err(end) => return Ok(end),
            }
        } else {
            (None, None)
        };
        Ok(Incoming::Message(Message {
            presentation_context_id: pc_id,
            command,
            dataset,
            received,
        }))
    }

    /// The header tramy will store a C-STORE data set behind, from what the command and the
    /// presentation context say (ingest checks the data set agrees before filing it).
    fn stored_header(&self, pc_id: u8, command: &Command) -> Option<Vec<u8>> {
        let context = self.context(pc_id)?;
        StoredFileHeader {
            transfer_syntax_uid: &context.transfer_syntax,
            sop_class_uid: &command.affected_sop_class_uid(),
            sop_instance_uid: &command.affected_sop_instance_uid(),
            source: &self.calling_ae_title,
        }
        .encode()
        .ok()
    }

    /// Receives the data set fragments that follow a command, into `spool` when given (dropping
    /// it on any early end removes its staging file), else into memory up to a bound.
    async fn receive_dataset(
        &mut self,
        pc_id: u8,
        mut spool: Option<crate::store::staging::Spool>,
    ) -> Result<Result<DataSet, Incoming>, ChannelError> {
        let mut data = BytesMut::new();
        loop {
            let pdv = match self.next_pdv().await? {
                Ok(pdv) => pdv,
                Err(end) => return Ok(Err(end)),
            };
            if pdv.value_type != PDataValueType::Data {
                return Err(ChannelError::Protocol(
                    "command fragment received inside a data set".into(),
                ));
            }
            if pdv.presentation_context_id != pc_id {
                return Err(ChannelError::Protocol(
                    "data set fragment on another presentation context than its command".into(),
                ));
            }
            match spool.as_mut() {
                Some(spool) => spool.push(&pdv.data).await?,
                None if data.len() + pdv.data.len() > MAX_IDENTIFIER_BYTES => {
                    return Err(ChannelError::Protocol(format!(
                        "a data set of this message is larger than {} MB",
                        MAX_IDENTIFIER_BYTES / (1024 * 1024)
                    )))
                }
                None if data.is_empty() => data = BytesMut::from(&pdv.data[..]),
                None => data.extend_from_slice(&pdv.data),
            }
            if pdv.is_last {
                break;
            }
        }
        Ok(Ok(match spool {
            Some(spool) => DataSet::Staged(spool.finish().await?),
            None => DataSet::Held(data.freeze()),
        }))
    }

    /// Sends a message on presentation context `pc_id`, fragmented to the peer's maximum PDU length.
    pub async fn send(
        &mut self,
        pc_id: u8,
        command: &[u8],
        dataset: Option<&[u8]>,
    ) -> Result<(), ChannelError> {
        // Each PDV item costs 6 bytes (length + context ID + header) inside the PDU.
        let peer_max = self.association.peer_max_pdu_length();
        let max_fragment = if peer_max == 0 {
            usize::MAX
        } else {
            (peer_max as usize).saturating_sub(6).max(1)
        };
        let small = dataset.map(|d| d.len()).unwrap_or(0) + command.len() + 12;
        if small <= max_fragment {
            // Command and data set fit one PDU: one write instead of two.
            let mut data = vec![PDataValue {
                presentation_context_id: pc_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data: command.to_vec(),
            }];
            if let Some(ds) = dataset {
                data.push(PDataValue {
                    presentation_context_id: pc_id,
                    value_type: PDataValueType::Data,
                    is_last: true,
                    data: ds.to_vec(),
                });
            }
            self.association.send_pdu(&Pdu::PData { data }).await?;
            return Ok(());
        }
        self.send_fragments(pc_id, PDataValueType::Command, command, max_fragment)
            .await?;
        if let Some(ds) = dataset {
            self.send_fragments(pc_id, PDataValueType::Data, ds, max_fragment)
                .await?;
        }
        Ok(())
    }

    async fn send_fragments(
        &mut self,
        pc_id: u8,
        value_type: PDataValueType,
        bytes: &[u8],
        max_fragment: usize,
    ) -> Result<(), ChannelError> {
        let mut chunks = bytes.chunks(max_fragment).peekable();
        if bytes.is_empty() {
            self.association
                .send_pdu(&Pdu::PData {
                    data: vec![PDataValue {
                        presentation_context_id: pc_id,
                        value_type,
                        is_last: true,
                        data: Vec::new(),
                    }],
                })
                .await?;
            return Ok(());
        }
        while let Some(chunk) = chunks.next() {
            let is_last = chunks.peek().is_none();
            self.association
                .send_pdu(&Pdu::PData {
                    data: vec![PDataValue {
                        presentation_context_id: pc_id,
                        value_type: value_type.clone(),
                        is_last,
                        data: chunk.to_vec(),
                    }],
                })
                .await?;
        }
        Ok(())
    }
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
        Pdu::Unknown { .. } => "unknown PDU",
    }
}

impl<A> Channel<A> {
    /// Gives the association back, to release or abort it.
    pub fn into_association(self) -> A {
        self.association
    }
}
