# frozen_string_literal: true

# Run with: puma -b tcp://127.0.0.1:PORT --threads 1:8 tests/peer/actioncable_app/config.ru
# See peer_app.rb for the environment variables and endpoints.
require_relative "peer_app"

map ActionCable.server.config.mount_path do
  run ActionCable.server
end

run PeerApp::HttpApp.new
