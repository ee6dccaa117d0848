# frozen_string_literal: true

# A real Rails ActionCable server (actioncable gem, no full Rails app) that
# behaves like Chatwoot's RoomChannel, for chatwoot-bridge's peer tests.
#
# What it mirrors from upstream Chatwoot (see /work/shared/chatwoot.md §1, §6):
#   * ApplicationCable::Connection is empty: no identified_by, no connect, so
#     every WebSocket is accepted; disable_request_forgery_protection = true, so
#     any Origin (or none) is accepted.
#   * RoomChannel#subscribed looks the user up by (pubsub_token, user_id) and the
#     account among the user's accounts, and RAISES ActiveRecord::RecordNotFound
#     when either is missing. Rails logs "Could not execute command ..." and sends
#     neither confirm_subscription nor reject_subscription (silent failure). A
#     blank user_id means "contact token" (ContactInbox lookup); this peer has no
#     contacts, so that always fails, like an agent token sent without user_id.
#   * On success: stream_from pubsub_token, stream_from "account_<id>", then
#     broadcast presence.update to the token stream. update_presence re-broadcasts.
#     No unsubscribed hook.
#   * GET /api/v1/profile with header api_access_token.
#
# Users table, read once at boot from the environment (defaults in brackets):
#   PEER_USER_ID            agent user id                    [1]
#   PEER_PUBSUB_TOKEN       the user's pubsub_token          [peer-pubsub-token-1]
#   PEER_API_TOKEN          the user's api access token      [peer-api-token]
#   PEER_ACCOUNT_IDS        comma-separated account ids      [1,2]
#   PEER_USER_NAME          display name                     [Peer Agent]
#   PEER_USER_EMAIL         email                            [agent@peer.test]
#   PEER_PRESENCE_DURATION  seconds a user stays "online"    [20]
#   PEER_LOG_LEVEL          ActionCable logger level         [debug]
#   PEER_PARENT_PID         if set, shut down when this parent process goes away
#                           (no orphaned puma when a test run is killed)
#
# Test-only control endpoints (loopback clients only):
#   POST /_peer/broadcast    {"stream": "...", "message": {...}} -> ActionCable.server.broadcast
#   POST /_peer/restart      ActionCable.server.restart (disconnect server_restart, reconnect true)
#   GET  /_peer/connections  live connection / subscription counters (see PeerApp.stats)

require "json"
require "logger"
require "ipaddr"
require "action_cable"
require "active_support/tagged_logging"

# Chatwoot raises ActiveRecord::RecordNotFound from find_by!/find; use the same
# class name so log lines read exactly like Chatwoot's. Only the exception class
# is defined (ActiveRecord::Base stays undefined, so ActionCable's worker does not
# try to manage database connections).
module ActiveRecord
  class RecordNotFound < StandardError; end unless const_defined?(:RecordNotFound)
end

module PeerApp
  User = Struct.new(:id, :pubsub_token, :api_token, :account_ids, :name, :email, keyword_init: true)

  def self.env_list(name, default)
    ENV.fetch(name, default).split(",").map(&:strip).reject(&:empty?).map { |value| Integer(value, 10) }
  end

  USERS = [
    User.new(
      id: Integer(ENV.fetch("PEER_USER_ID", "1"), 10),
      pubsub_token: ENV.fetch("PEER_PUBSUB_TOKEN", "peer-pubsub-token-1"),
      api_token: ENV.fetch("PEER_API_TOKEN", "peer-api-token"),
      account_ids: env_list("PEER_ACCOUNT_IDS", "1,2"),
      name: ENV.fetch("PEER_USER_NAME", "Peer Agent"),
      email: ENV.fetch("PEER_USER_EMAIL", "agent@peer.test")
    )
  ].freeze

  # pubsub_token => contact id; empty: every contact-style subscribe fails.
  CONTACT_INBOXES = {}.freeze

  PRESENCE_DURATION = Integer(ENV.fetch("PEER_PRESENCE_DURATION", "20"), 10)

  @mutex = Mutex.new
  @presence = {} # [account_id, user_id] => unix seconds of last update
  @counters = Hash.new(0)

  class << self
    def find_user!(pubsub_token, user_id)
      user = USERS.find { |u| u.pubsub_token == pubsub_token.to_s && u.id.to_s == user_id.to_s }
      user || raise(ActiveRecord::RecordNotFound, "Couldn't find User")
    end

    def find_contact!(pubsub_token)
      CONTACT_INBOXES.fetch(pubsub_token.to_s) { raise ActiveRecord::RecordNotFound, "Couldn't find ContactInbox" }
    end

    def find_account!(user, account_id)
      raise ActiveRecord::RecordNotFound, "Couldn't find Account without an ID" if account_id.blank?

      found = user.account_ids.find { |id| id.to_s == account_id.to_s }
      found || raise(ActiveRecord::RecordNotFound,
                     "Couldn't find Account with 'id'=#{account_id} [WHERE \"account_users\".\"user_id\" = $1]")
    end

    def find_user_by_api_token(token)
      USERS.find { |u| u.api_token == token.to_s } unless token.to_s.empty?
    end

    def update_presence(account_id, user_id)
      @mutex.synchronize { @presence[[account_id, user_id]] = Time.now.to_i }
    end

    def online_users(account_id)
      cutoff = Time.now.to_i - PRESENCE_DURATION
      @mutex.synchronize do
        @presence.each_with_object({}) do |((account, user), seen_at), users|
          users[user.to_s] = "online" if account == account_id && seen_at >= cutoff
        end
      end
    end

    def count(name)
      @mutex.synchronize { @counters[name] += 1 }
    end

    def counters
      @mutex.synchronize { @counters.dup }
    end

    # Snapshot of what the cable server holds right now. Reads other threads'
    # state without locks; good enough for polling in tests.
    def stats
      details = ActionCable.server.connections.dup.map do |connection|
        alive = connection.send(:websocket).alive?
        subscriptions = connection.subscriptions.send(:subscriptions).dup
        confirmed = subscriptions.select { |_id, channel| channel.send(:subscription_confirmation_sent?) }.keys
        { alive: alive, subscriptions: subscriptions.keys, confirmed: confirmed }
      end
      live = details.select { |detail| detail[:alive] }
      totals = counters
      {
        connections: live.size,
        connections_registered: details.size,
        subscriptions: live.sum { |detail| detail[:subscriptions].size },
        confirmed: live.sum { |detail| detail[:confirmed].size },
        confirmations_total: totals["confirmations"],
        failed_subscribes_total: totals["failed_subscribes"],
        presence_updates_total: totals["presence_updates"],
        restarts_total: totals["restarts"],
        details: live
      }
    end
  end
end

module ApplicationCable
  # Chatwoot's app/channels/application_cable/connection.rb: empty.
  class Connection < ActionCable::Connection::Base
  end

  class Channel < ActionCable::Channel::Base
  end
end

# Chatwoot's app/channels/room_channel.rb, with the models replaced by PeerApp's table.
class RoomChannel < ApplicationCable::Channel
  def subscribed
    current_user
    current_account
    ensure_stream
    update_subscription
    broadcast_presence
  rescue StandardError
    PeerApp.count("failed_subscribes")
    raise # Subscriptions#execute_command logs "Could not execute command"; nothing is sent.
  end

  def update_presence
    PeerApp.count("presence_updates")
    update_subscription
    broadcast_presence
  end

  private

  def broadcast_presence
    data = { account_id: current_account, users: PeerApp.online_users(current_account) }
    data[:contacts] = {} if current_user.is_a?(PeerApp::User)
    ActionCable.server.broadcast(@pubsub_token, { event: "presence.update", data: data })
  end

  def ensure_stream
    stream_from @pubsub_token
    stream_from "account_#{current_account}" if current_user.is_a?(PeerApp::User)
  end

  def update_subscription
    PeerApp.update_presence(current_account, current_user.is_a?(PeerApp::User) ? current_user.id : current_user)
  end

  def current_user
    @current_user ||= begin
      @pubsub_token = params[:pubsub_token]
      if params[:user_id].blank?
        PeerApp.find_contact!(@pubsub_token)
      else
        PeerApp.find_user!(@pubsub_token, params[:user_id])
      end
    end
  end

  def current_account
    @current_account ||= PeerApp.find_account!(current_user, params[:account_id])
  end
end

# Counts confirmations as Rails actually transmits them (after every stream_from
# has been registered with the pubsub adapter).
ActiveSupport::Notifications.subscribe("transmit_subscription_confirmation.action_cable") do |*|
  PeerApp.count("confirmations")
end

$stdout.sync = true
$stderr.sync = true
ActionCable.server.config.tap do |config|
  config.cable = { "adapter" => "async" }
  config.disable_request_forgery_protection = true
  config.connection_class = -> { ApplicationCable::Connection }
  config.mount_path = "/cable"
  config.worker_pool_size = 4
  logger = ActiveSupport::TaggedLogging.new(ActiveSupport::Logger.new($stdout))
  logger.level = ENV.fetch("PEER_LOG_LEVEL", "debug")
  config.logger = logger
end

# Orphan guard: RailsPeer (tests/peer/rails_peer.py) passes its own pid.
if (parent_pid = ENV.fetch("PEER_PARENT_PID", "0").to_i).positive?
  Thread.new do
    sleep 1 while Process.ppid == parent_pid
    Process.kill("TERM", Process.pid)
    sleep 10
    Process.kill("KILL", Process.pid)
  end
end

module PeerApp
  # Plain Rack endpoints: the Chatwoot profile API and the test control plane.
  class HttpApp
    LOOPBACK = [IPAddr.new("127.0.0.0/8"), IPAddr.new("::1/128")].freeze

    def call(env)
      request = Rack::Request.new(env)
      case [request.request_method, request.path_info]
      when ["GET", "/api/v1/profile"] then profile(request)
      when ["POST", "/_peer/broadcast"] then control(request) { broadcast(request) }
      when ["POST", "/_peer/restart"] then control(request) { restart }
      when ["GET", "/_peer/connections"] then control(request) { json(200, PeerApp.stats) }
      else
        if request.get? && request.path_info.match?(%r{\A/api/v1/accounts/\d+/conversations\z})
          conversations(request)
        else
          json(404, { error: "Not Found" })
        end
      end
    rescue JSON::ParserError, KeyError => e
      json(400, { error: e.message })
    end

    private

    def json(status, body)
      [status, { "Content-Type" => "application/json; charset=utf-8" }, [JSON.generate(body)]]
    end

    def control(request)
      addr = IPAddr.new(request.ip.to_s) rescue nil # rubocop:disable Style/RescueModifier
      return json(403, { error: "loopback only" }) unless addr && LOOPBACK.any? { |net| net.include?(addr) }

      yield
    end

    def broadcast(request)
      body = JSON.parse(request.body.read)
      ActionCable.server.broadcast(body.fetch("stream"), body.fetch("message"))
      json(200, { ok: true })
    end

    def restart
      PeerApp.count("restarts")
      ActionCable.server.restart
      json(200, { ok: true })
    end

    # The bridge's REST fallback reads this list; the peer has no conversations, so it
    # answers like a quiet Chatwoot account (conversations/index.json.jbuilder).
    def conversations(request)
      return json(401, { error: "Invalid Access Token" }) unless PeerApp.find_user_by_api_token(request.get_header("HTTP_API_ACCESS_TOKEN"))

      json(200, { data: { meta: { mine_count: 0, assigned_count: 0, unassigned_count: 0, all_count: 0 }, payload: [] } })
    end

    # Chatwoot: Api::BaseController access-token auth, then
    # app/views/api/v1/models/_user.json.jbuilder.
    def profile(request)
      token = request.get_header("HTTP_API_ACCESS_TOKEN")
      user = PeerApp.find_user_by_api_token(token)
      return json(401, { error: "Invalid Access Token" }) unless user

      json(200, profile_body(user))
    end

    def profile_body(user)
      {
        access_token: user.api_token,
        account_id: user.account_ids.first,
        available_name: user.name,
        avatar_url: "",
        confirmed: true,
        display_name: nil,
        message_signature: nil,
        email: user.email,
        id: user.id,
        inviter_id: nil,
        name: user.name,
        provider: "email",
        pubsub_token: user.pubsub_token,
        custom_attributes: {},
        role: "administrator",
        ui_settings: {},
        uid: user.email,
        type: "SuperAdmin",
        accounts: user.account_ids.map do |account_id|
          {
            id: account_id,
            name: "Peer Account #{account_id}",
            status: "active",
            active_at: nil,
            role: "administrator",
            permissions: ["administrator"],
            availability: "online",
            availability_status: "online",
            auto_offline: true,
            custom_role_id: nil,
            custom_role: nil
          }
        end
      }
    end
  end
end
