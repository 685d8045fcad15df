"""What a run leaves behind: pictures of score maps (:mod:`.render`), each image's files with the
folder's manifest (:mod:`.files`) and what one prediction writes (:mod:`.heatmaps`)."""
