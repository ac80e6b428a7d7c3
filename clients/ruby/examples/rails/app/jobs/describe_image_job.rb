# frozen_string_literal: true

# Captions an uploaded image and stores the description, as a meme/photo search app
# (e.g. meme_search) does after each upload:
#
#   class Meme < ApplicationRecord
#     has_one_attached :image
#     after_create_commit { DescribeImageJob.perform_later(self) }
#   end
#
# `description` (text) and `description_model` (string) are columns of the record.
class DescribeImageJob < ApplicationJob
  queue_as :moondream

  # The sidecar is restarting or overloaded: try again later (the client already retried
  # UNAVAILABLE a few times within its deadline).
  retry_on Moondream::Unavailable, Moondream::ResourceExhausted, Moondream::DeadlineExceeded,
           wait: :exponentially_longer, attempts: 5
  # The file is not an image the server can decode: retrying cannot help.
  discard_on Moondream::InvalidArgument

  def perform(record, length: "normal")
    attachment = record.image
    return unless attachment.attached?

    # ActiveStorage downloads a binary String, which the client sends as image bytes.
    result = Moondream.client.caption(attachment.download, length: length.to_sym)
    record.update!(description: result.caption.strip, description_model: result.model)
  end
end
